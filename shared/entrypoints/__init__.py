"""Entry points: one Blueprint per area, thin trigger functions that parse, call one service, map."""
