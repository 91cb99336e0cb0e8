"""What live configuration costs a call: dispatch through the ServiceSwitch vs direct."""
