"""Stack output names: the contract between the Pulumi program (``__main__.py``) and every DR command.

Never retype these strings elsewhere; import them.
"""

BUCKET = "etcdBackupBucketName"
SNAPSHOT_PREFIX = "snapshotPrefix"
AWS_REGION = "awsRegion"
CLUSTER_NAME = "clusterName"
CLUSTER_ENDPOINT = "clusterEndpoint"
NODE_INSTANCE_ID = "nodeInstanceId"
NODE_PUBLIC_IP = "nodePublicIp"
NODE_PRIVATE_IP = "nodePrivateIp"
TALOS_VERSION = "talosVersion"
# The age public keys snapshots are encrypted to ([] = not encrypted). A stack from before it existed lacks it; the
# DR commands then encrypt to nothing unless DR_AGE_RECIPIENTS says otherwise.
SNAPSHOT_AGE_RECIPIENTS = "snapshotAgeRecipients"
# Every control-plane node, bootstrap node first: a list of {"name", "privateIp", "publicIp", "instanceId",
# "availabilityZone"} (dr/core/cluster_nodes.py reads it). A stack from before it existed lacks it: the DR commands
# then know one node, from NODE_PRIVATE_IP / NODE_PUBLIC_IP / NODE_INSTANCE_ID.
CONTROL_PLANE_NODES = "controlPlaneNodes"

# Secret outputs.
TALOSCONFIG = "talosconfig"
KUBECONFIG = "kubeconfig"
CONTROLPLANE_CONFIG = "controlplaneConfig"
TALOS_MACHINE_SECRETS = "talosMachineSecrets"

PLAIN_OUTPUTS = (
    BUCKET,
    SNAPSHOT_PREFIX,
    AWS_REGION,
    CLUSTER_NAME,
    CLUSTER_ENDPOINT,
    NODE_INSTANCE_ID,
    NODE_PUBLIC_IP,
    NODE_PRIVATE_IP,
    TALOS_VERSION,
    SNAPSHOT_AGE_RECIPIENTS,
    CONTROL_PLANE_NODES,
)
SECRET_OUTPUTS = (TALOSCONFIG, KUBECONFIG, CONTROLPLANE_CONFIG, TALOS_MACHINE_SECRETS)
ALL_OUTPUTS = PLAIN_OUTPUTS + SECRET_OUTPUTS

# The lifecycle expiry days of each retention tier ({"hourly": 2, ...}), as the bucket's lifecycle rules apply them;
# `talos-dr prune --s3` reads it (a stack from before it existed lacks it: prune then reads the bucket's lifecycle).
SNAPSHOT_RETENTION_DAYS = "snapshotRetentionDays"
# Outputs of the vault, exported by every stack but kept out of ALL_OUTPUTS (the sandbox does not produce them).
VAULT_OUTPUTS = (SNAPSHOT_RETENTION_DAYS,)

# Outputs of the snapshot schedule, exported only when scheduledSnapshots is on. Kept out of ALL_OUTPUTS: that is
# what the DR commands rely on (and what the sandbox produces); these are for people and dashboards.
SNAPSHOT_FUNCTION_NAME = "snapshotFunctionName"
NEWEST_SNAPSHOT_KEY = "newestSnapshotKey"
NEWEST_SNAPSHOT_TIME = "newestSnapshotTime"
BACKUPS_STATUS = "backupsStatus"
# The SNS topic the backup alarms notify (infra/alarms.py): subscribe anything else to it.
ALERT_TOPIC_ARN = "alertTopicArn"
SCHEDULE_OUTPUTS = (SNAPSHOT_FUNCTION_NAME, NEWEST_SNAPSHOT_KEY, NEWEST_SNAPSHOT_TIME, BACKUPS_STATUS, ALERT_TOPIC_ARN)

# The prefix under which snapshots live in the bucket (value of the snapshotPrefix output).
DEFAULT_SNAPSHOT_PREFIX = "snapshots/"

# The project's name in Pulumi.yaml and its default stack.
PROJECT_NAME = "talos-dr"
DEFAULT_STACK = "prod"
