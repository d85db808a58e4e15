"""The test suite (pytest): one module per part of the project; shared infrastructure in `tests.helpers`."""
