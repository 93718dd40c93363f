"""Use cases, written against the ports in shared.ports. Import no azure.*; take a clock."""
