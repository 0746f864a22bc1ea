"""Where mail comes in: the embedded SMTP server and the path every intake shares."""
