"""Local TFDS builders. Importing a builder module registers it with TFDS by name."""
