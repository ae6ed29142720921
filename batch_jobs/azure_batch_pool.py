"""The Azure Batch pool the tasks run on: its settings, its autoscale formula, and making sure it exists.

The pool runs the project's container image on Linux VMs and scales with
the work: the autoscale formula follows the pending (active + running)
tasks, up to ``max_nodes``, and falls to ``min_nodes`` (zero by default:
no idle VMs to pay for, the original architecture's cost advice) once no
task has been pending for ``sample_minutes``. Running tasks are never cut
short by a scale-down (``taskcompletion``).

``ensure_pool`` creates the pool when it is missing and keeps an existing
pool's formula in line with the settings; it never deletes or resizes a
pool by hand. The client is the azure-core based ``azure.batch.BatchClient``
(azure-batch >= 15), with a shared key (``AzureNamedKeyCredential``) or
Azure AD (``DefaultAzureCredential``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = ["BatchSetupError", "PoolConfig", "autoscale_formula", "ensure_pool", "open_batch_client", "registry_server"]

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BatchSetupError(RuntimeError):
    """Azure Batch cannot be used as configured (missing SDK, bad settings, pool or account trouble)."""


@dataclass(frozen=True)
class PoolConfig:
    """What the pool is: VM size and image, the container image tasks run in, node caps and scaling."""

    pool_id: str
    vm_size: str
    container_image: str
    vm_image: str = "microsoft-dsvm:ubuntu-hpc:2204"  # publisher:offer:sku[:version] of a container-ready Linux image
    node_agent: str = "batch.node.ubuntu 22.04"
    min_nodes: int = 0
    max_nodes: int = 4
    task_slots_per_node: int = 1
    spot: bool = False  # Spot (low-priority) nodes instead of dedicated ones
    formula: str | None = None  # replaces the generated autoscale formula
    sample_minutes: int = 5  # autoscale evaluation interval, and how long pending tasks are remembered
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    identity_resource_id: str | None = None  # user-assigned identity of the pool: image pulls and output uploads

    def __post_init__(self) -> None:
        if not _ID.match(self.pool_id):
            raise BatchSetupError(f"pool id must be 1-64 of letters, digits, '-' and '_', not {self.pool_id!r}")
        if not self.container_image.strip():
            raise BatchSetupError("the pool needs a container image (the sensorflow image in your registry)")
        if len(self.vm_image.split(":")) not in (3, 4):
            raise BatchSetupError(f"VM image must be publisher:offer:sku[:version], not {self.vm_image!r}")
        if not 0 <= self.min_nodes <= self.max_nodes or self.max_nodes < 1:
            raise BatchSetupError(f"node caps must satisfy 0 <= min <= max and max >= 1, got {self.min_nodes}..{self.max_nodes}")
        if self.task_slots_per_node < 1:
            raise BatchSetupError("task slots per node must be >= 1")
        if not 5 <= self.sample_minutes <= 168 * 60:
            raise BatchSetupError("the autoscale interval must be 5 minutes to 168 hours (the service's limits)")
        if (self.registry_username is None) != (self.registry_password is None):
            raise BatchSetupError("a registry login needs both a user name and a password")

    @property
    def autoscale(self) -> str:
        """The formula the pool scales by: the configured one, else ``autoscale_formula``'s."""
        return self.formula or autoscale_formula(
            self.min_nodes, self.max_nodes, self.task_slots_per_node, self.spot, self.sample_minutes
        )


def autoscale_formula(min_nodes: int, max_nodes: int, slots_per_node: int, spot: bool = False, sample_minutes: int = 5) -> str:
    """An autoscale formula: enough nodes for the pending tasks over the last ``sample_minutes``, within the caps.

    ``$PendingTasks`` counts active and running tasks. While the service has
    too few samples of it (a new pool), the newest sample decides; otherwise
    the most pending tasks seen in the window, so nodes stay through short
    gaps between runs and go once nothing was pending for the whole window.
    """
    target, other = ("$TargetLowPriorityNodes", "$TargetDedicatedNodes") if spot else (
        "$TargetDedicatedNodes", "$TargetLowPriorityNodes")
    return "\n".join([
        "// sensorflow: nodes follow the pending (active + running) tasks; none when none are pending",
        f"minNodes = {min_nodes};",
        f"maxNodes = {max_nodes};",
        f"slotsPerNode = {slots_per_node};",
        f"sampleWindow = TimeInterval_Minute * {sample_minutes};",
        ("pending = $PendingTasks.GetSamplePercent(sampleWindow) < 70 ? max(0, $PendingTasks.GetSample(1)) : "
         "max($PendingTasks.GetSample(sampleWindow));"),
        f"{target} = max(minNodes, min(maxNodes, ceil(pending / slotsPerNode)));",
        f"{other} = 0;",
        "$NodeDeallocationOption = taskcompletion;",
    ])


def registry_server(image: str) -> str:
    """The registry host of an image name (Docker's rule: a first component with '.' or ':', or localhost)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def open_batch_client(account_url: str, account_name: str | None, account_key: str | None, **client_options: Any):
    """A ``BatchClient``: shared key when a key is given, else ``DefaultAzureCredential`` (Azure AD).

    ``client_options`` go to the client (``transport``, ``retry_total``, ...).
    """
    try:
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential
    except ImportError as e:
        raise BatchSetupError(f"Azure Batch needs azure-batch>=15: pip install 'sensorflow[azure]' ({e})") from e
    if not account_url.startswith("https://"):
        raise BatchSetupError(f"Batch account URL must be https://ACCOUNT.REGION.batch.azure.com, not {account_url!r}")
    if account_key is not None:
        if not account_name:
            raise BatchSetupError("a Batch account key needs the account name (batch_account_name)")
        credential: Any = AzureNamedKeyCredential(account_name, account_key)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BatchClient(account_url, credential, **client_options)


def pool_create_options(config: PoolConfig):
    """The Create Pool request body for ``config``."""
    from azure.batch import models

    publisher, offer, sku, *version = config.vm_image.split(":")
    registries = None
    if config.registry_username is not None or config.identity_resource_id is not None:
        registries = [models.ContainerRegistryReference(
            registry_server=registry_server(config.container_image),
            username=config.registry_username,
            password=config.registry_password,
            identity_reference=None if config.registry_username is not None else
            models.BatchNodeIdentityReference(resource_id=config.identity_resource_id),
        )]
    return models.BatchPoolCreateOptions(
        id=config.pool_id,
        display_name="sensorflow train and score tasks",
        vm_size=config.vm_size,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(
                publisher=publisher, offer=offer, sku=sku, version=version[0] if version else "latest"),
            node_agent_sku_id=config.node_agent,
            container_configuration=models.BatchContainerConfiguration(
                type=models.ContainerType.DOCKER_COMPATIBLE,
                container_image_names=[config.container_image],  # pulled when a node starts
                container_registries=registries,
            ),
        ),
        enable_auto_scale=True,
        auto_scale_formula=config.autoscale,
        auto_scale_evaluation_interval=timedelta(minutes=config.sample_minutes),
        task_slots_per_node=config.task_slots_per_node,
        # Fill a node before the next: idle nodes can then go at the next evaluation.
        task_scheduling_policy=models.BatchTaskSchedulingPolicy(node_fill_type=models.BatchNodeFillType.PACK),
        metadata=[models.BatchMetadataItem(name="created-by", value="sensorflow")],
    )


def ensure_pool(client: Any, config: PoolConfig) -> str:
    """Create the pool if missing; ``created``, ``updated`` (formula brought in line) or ``existing``."""
    from azure.batch import models
    from azure.core.exceptions import (
        AzureError,
        ResourceExistsError,
        ResourceNotFoundError,
    )

    try:
        try:
            pool = client.get_pool(config.pool_id, select=["id", "state", "vmSize", "enableAutoScale", "autoScaleFormula"])
        except ResourceNotFoundError:
            try:
                client.create_pool(pool_create_options(config))
                log.info("created Batch pool %s (%s, up to %d nodes)", config.pool_id, config.vm_size, config.max_nodes)
                return "created"
            except ResourceExistsError:  # another sidecar created it in between
                return "existing"
        if pool.state == models.BatchPoolState.DELETING:
            raise BatchSetupError(f"Batch pool {config.pool_id!r} is being deleted; wait, or set another pool id")
        if (pool.vm_size or "").lower() != config.vm_size.lower():
            log.warning("Batch pool %s has VM size %s, not %s: delete it to change the size",
                        config.pool_id, pool.vm_size, config.vm_size)
        if pool.enable_auto_scale and pool.auto_scale_formula == config.autoscale:
            return "existing"
        client.enable_pool_auto_scale(config.pool_id, models.BatchPoolEnableAutoScaleOptions(
            auto_scale_formula=config.autoscale, auto_scale_evaluation_interval=timedelta(minutes=config.sample_minutes)))
        log.info("Batch pool %s: autoscale formula updated", config.pool_id)
        return "updated"
    except AzureError as e:
        raise BatchSetupError(f"cannot set up Batch pool {config.pool_id!r}: {one_line(e)}") from e


def one_line(error: BaseException) -> str:
    """The first line of an Azure SDK error (its full text repeats the response)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
