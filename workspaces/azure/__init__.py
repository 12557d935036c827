"""The Azure ML adapter, one module per role; `workspace.AzureWorkspace` assembles them.

Importing this package does not import the SDK: `settings` is plain pydantic, so validating a profile stays cheap.
"""
