"""Open intake API: Open311 GeoReport v2, 12345 work-order transfer, machine alarms and status webhooks."""
