from ocsight.cli import entry

entry()
