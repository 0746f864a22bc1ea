"""Aggregate reports as reporters send them (shapes of Google's and Microsoft's), and messages carrying them."""

from __future__ import annotations

import gzip
import io
import zipfile
from email.message import EmailMessage

GOOGLE = """<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>{report_id}</report_id>
    <date_range>
      <begin>1735689600</begin>
      <end>1735775999</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>none</p>
    <sp>none</sp>
    <pct>100</pct>
    <np>none</np>
  </policy_published>
  <record>
    <row>
      <source_ip>203.0.113.5</source_ip>
      <count>12</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.test</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.test</domain>
        <result>pass</result>
        <selector>appliance-rsa</selector>
      </dkim>
      <spf>
        <domain>example.test</domain>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>198.51.100.77</source_ip>
      <count>3</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>fail</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.test</header_from>
    </identifiers>
    <auth_results>
      <spf>
        <domain>spammer.example</domain>
        <result>softfail</result>
      </spf>
    </auth_results>
  </record>
</feedback>
"""

MICROSOFT = """<?xml version="1.0"?>
<feedback xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <version>1.0</version>
  <report_metadata>
    <org_name>Enterprise Outlook</org_name>
    <email>dmarcreport@microsoft.com</email>
    <report_id>{report_id}</report_id>
    <date_range>
      <begin>1735776000</begin>
      <end>1735862400</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain>
    <adkim>s</adkim>
    <aspf>s</aspf>
    <p>quarantine</p>
    <sp>quarantine</sp>
    <pct>100</pct>
    <fo>0</fo>
  </policy_published>
  <record>
    <row>
      <source_ip>2001:db8::25</source_ip>
      <count>4</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <envelope_to>outlook.com</envelope_to>
      <envelope_from>bounce.example.test</envelope_from>
      <header_from>example.test</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.test</domain>
        <selector>appliance-ed25519</selector>
        <result>pass</result>
      </dkim>
      <spf>
        <domain>bounce.example.test</domain>
        <scope>mfrom</scope>
        <result>fail</result>
      </spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>192.0.2.66</source_ip>
      <count>2</count>
      <policy_evaluated>
        <disposition>quarantine</disposition>
        <dkim>fail</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.test</header_from>
    </identifiers>
    <auth_results>
      <spf>
        <domain>example.test</domain>
        <result>fail</result>
      </spf>
    </auth_results>
  </record>
</feedback>
"""

NAMESPACED = """<?xml version="1.0" encoding="UTF-8"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">
  <version>1.0</version>
  <report_metadata>
    <org_name>Example Reporter</org_name>
    <email>dmarc@reporter.example</email>
    <report_id>ns-1</report_id>
    <date_range><begin>1735689600</begin><end>1735775999</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>Example.Test</domain>
    <p>reject</p>
  </policy_published>
  <record>
    <row>
      <source_ip>203.0.113.9</source_ip>
      <count>1</count>
      <policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><spf><domain>example.test</domain><result>fail</result></spf></auth_results>
  </record>
</feedback>
"""


def google(report_id: str = "10402651235457367423") -> str:
    return GOOGLE.replace("{report_id}", report_id)


def microsoft(report_id: str = "8c5d2a1e4f6b47b9a1e0c3d2b5a4f6e7") -> str:
    return MICROSOFT.replace("{report_id}", report_id)


def zipped(xml: bytes, name: str = "google.com!example.test!1735689600!1735775999.xml") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, xml)
    return out.getvalue()


def gzipped(xml: bytes) -> bytes:
    return gzip.compress(xml)


def report_message(payload: bytes, content_type: str, *, filename: str = "report.xml.gz",
                   to: str = "dmarc-reports@example.test", as_body: bool = False) -> bytes:
    """A report mail as reporters send it: a short text and the report attached (or as the body)."""
    message = EmailMessage()
    message["From"] = "noreply-dmarc-support@google.com"
    message["To"] = to
    message["Subject"] = "Report domain: example.test Submitter: google.com Report-ID: <1040>"
    message["Date"] = "Thu, 2 Jan 2025 07:00:00 +0000"
    message["Message-ID"] = "<report-1@google.com>"
    maintype, subtype = content_type.split("/")
    if as_body:
        message.set_content(payload, maintype=maintype, subtype=subtype)
    else:
        message.set_content("This is an aggregate report from google.com.")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()
