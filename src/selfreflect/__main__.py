from selfreflect.cli import main

main()
