"""The command line: argument parsing, password sources, output and the exit-code map.

The only layer that prints or exits.
"""
