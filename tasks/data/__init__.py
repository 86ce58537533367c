"""Data: built-in and file datasets cached as tensors (`datasets`), table preprocessing as plain JSON (`preprocess`),
image folders (`images`) and a user's dataset function (`user_data`)."""
