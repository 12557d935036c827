"""The local workspace adapter, one module per role; `workspace.LocalWorkspace` assembles them."""
