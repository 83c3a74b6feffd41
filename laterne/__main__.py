"""python -m laterne"""

from laterne.cli import main

main()
