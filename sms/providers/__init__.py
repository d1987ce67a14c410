"""SMS gateway providers behind the SmsSender port (each imports its protocol library alone)."""
