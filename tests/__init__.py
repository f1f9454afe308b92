"""The datatools test suite (a package, so that pytest and mypy both name its modules
``tests.<name>`` and test modules import shared helpers as ``tests.helpers``)."""
