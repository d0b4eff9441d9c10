"""The application: use cases over an assembled backend, and the assembly by name."""
