"""Telephony: 12319/12345 calls through Asterisk AMI, seats, recordings, callbacks."""
