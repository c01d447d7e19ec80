from ocsight.cli import main

main()
