"""Private machinery shared by every primitive: guard faces, compose, durations."""
