"""SMS notices to citizens and their replies, through pluggable gateways."""
