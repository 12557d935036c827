"""Credentials and clients: DefaultAzureCredential (the notebook's browser fallback only when a person is at a
terminal), an MLClient for the workspace (config.json or the three ids) and one for the `azureml` registry."""

from __future__ import annotations

import sys
from typing import Any

from azure.ai.ml import MLClient

from workspaces.azure.settings import AzureSettings
from workspaces.ports import WorkspaceError

MANAGEMENT_SCOPE = "https://management.azure.com/.default"


def make_credential(settings: AzureSettings, default: Any = None) -> Any:
    from azure.identity import DefaultAzureCredential, InteractiveBrowserCredential

    credential = (default or DefaultAzureCredential)()
    try:
        credential.get_token(MANAGEMENT_SCOPE)
        return credential
    except Exception as exc:
        if settings.interactive_login and sys.stdin.isatty():
            return InteractiveBrowserCredential()
        raise WorkspaceError(
            "no Azure credentials for a non-interactive run: run `az login` on this machine, or set "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET for a service principal, or use a managed "
            f"identity (DefaultAzureCredential said: {str(exc).splitlines()[0][:300]})"
        ) from exc


def workspace_client(workspace: Any, credential: Any) -> MLClient:
    """From a profile's `workspace` section: config.json, else subscription / resource group / workspace."""
    settings: AzureSettings = workspace.azure
    ids = {
        "subscription_id": workspace.subscription_id,
        "resource_group_name": workspace.resource_group,
        "workspace_name": workspace.workspace_name,
    }
    if settings.config_path or not any(ids.values()):
        try:
            return MLClient.from_config(credential=credential, path=settings.config_path)
        except Exception as exc:
            raise WorkspaceError(
                "Azure workspace not configured: download config.json from the workspace's page in Azure ML Studio "
                "and point workspace.azure.config_path at it, or set workspace.subscription_id, "
                f"workspace.resource_group and workspace.workspace_name ({str(exc)[:200]})"
            ) from exc
    profile_keys = {
        "subscription_id": "subscription_id",
        "resource_group_name": "resource_group",
        "workspace_name": "workspace_name",
    }
    missing = [f"workspace.{profile_keys[key]}" for key, value in ids.items() if not value]
    if missing:
        raise WorkspaceError(f"workspace.kind azure needs {', '.join(missing)} (or workspace.azure.config_path)")
    return MLClient(credential, **ids)


def registry_client(workspace: Any, credential: Any) -> MLClient:
    return MLClient(credential, registry_name=workspace.registry_name)
