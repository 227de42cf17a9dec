from bulkfetch.cli.main import main

main()
