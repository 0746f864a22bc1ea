"""A reader process: ``python -m appliance.mail``, started by ``ReaderPool``."""

import sys

from appliance.mail.readers import serve

serve(sys.argv[1:])
