"""Private machinery shared by every primitive (see docs/core.md).

The guard base, its faces and hooks, keyed guards, the scope stack and scopes,
deadlines, compose, argument validators, durations and the token arithmetic.
"""
