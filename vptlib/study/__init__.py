"""The study: profiles, tuning grids, sweeps, the book's build, leakage and statistics."""
