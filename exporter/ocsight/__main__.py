from ocsight.launch import entry

entry()
