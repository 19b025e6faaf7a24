"""RM-Bench, reward methods and the domain diagonal (DESIGN.md, issue 5)."""
