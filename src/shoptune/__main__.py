from shoptune.cli import main

main()
