from evonorm_search.cli import main

main()
