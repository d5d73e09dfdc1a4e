"""One module per resource: tasks, the catalogue (styles), health."""
