"""The Kafka APIs strom serves, as field tables (node/kafka/codec.py explains the format).

Each table follows the shape of the message in Kafka's protocol (field names in snake case, the
version ranges at which each field exists), cut at the highest version strom serves. `served` is
the range answered and advertised (ApiVersions). Produce is served from v0 although only
RecordBatch v2 (v3+) is stored: librdkafka turns compression off when Produce starts above 0,
and a v0-2 message set is refused per partition. A request outside `served` closes the
connection (ApiVersions answers with its range instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Schema, Versions


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    name: str
    request: Schema
    response: Schema
    served: Versions
    advertised: Versions

    def is_flexible(self, version: int) -> bool:
        return version in self.request.flexible


def _api(
    key: int,
    name: str,
    served: str,
    flexible: str,
    request: str,
    response: str,
    advertised: str | None = None,
) -> Api:
    return Api(
        key,
        name,
        Schema.of(f"{name}Request", request, flexible),
        Schema.of(f"{name}Response", response, flexible),
        Versions.parse(served),
        Versions.parse(advertised or served),
    )


PRODUCE = _api(
    0,
    "Produce",
    "3-8",
    "9+",
    advertised="0-8",
    request="""
transactional_id string 3+ null=3+ default=null
acks int16 0+
timeout_ms int32 0+
topic_data [struct] 0+
  name string 0+
  partition_data [struct] 0+
    index int32 0+
    records records 0+ null=0+
""",
    response="""
responses [struct] 0+
  name string 0+
  partition_responses [struct] 0+
    index int32 0+
    error_code int16 0+
    base_offset int64 0+
    log_append_time_ms int64 2+ default=-1
    log_start_offset int64 5+ default=-1
    record_errors [struct] 8+
      batch_index int32 8+
      batch_index_error_message string 8+ null=8+ default=null
    error_message string 8+ null=8+ default=null
throttle_time_ms int32 1+
""",
)

FETCH = _api(
    1,
    "Fetch",
    "4-11",
    "12+",
    request="""
replica_id int32 0-14 default=-1
max_wait_ms int32 0+
min_bytes int32 0+
max_bytes int32 3+ default=0x7fffffff
isolation_level int8 4+
session_id int32 7+
session_epoch int32 7+ default=-1
topics [struct] 0+
  topic string 0-12
  partitions [struct] 0+
    partition int32 0+
    current_leader_epoch int32 9+ default=-1
    fetch_offset int64 0+
    log_start_offset int64 5+ default=-1
    partition_max_bytes int32 0+
forgotten_topics_data [struct] 7+
  topic string 7-12
  partitions [int32] 7+
rack_id string 11+ default=
""",
    response="""
throttle_time_ms int32 1+
error_code int16 7+
session_id int32 7+
responses [struct] 0+
  topic string 0-12
  partitions [struct] 0+
    partition_index int32 0+
    error_code int16 0+
    high_watermark int64 0+
    last_stable_offset int64 4+ default=-1
    log_start_offset int64 5+ default=-1
    aborted_transactions [struct] 4+ null=4+
      producer_id int64 4+
      first_offset int64 4+
    preferred_read_replica int32 11+ default=-1
    records records 0+ null=0+
""",
)

LIST_OFFSETS = _api(
    2,
    "ListOffsets",
    "1-6",
    "6+",
    request="""
replica_id int32 0+
isolation_level int8 2+
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    current_leader_epoch int32 4+ default=-1
    timestamp int64 0+
""",
    response="""
throttle_time_ms int32 2+
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    error_code int16 0+
    timestamp int64 1+ default=-1
    offset int64 1+ default=-1
    leader_epoch int32 4+ default=-1
""",
)

METADATA = _api(
    3,
    "Metadata",
    "0-12",
    "9+",
    request="""
topics [struct] 0+ null=1+
  topic_id uuid 10+
  name string 0+ null=10+
allow_auto_topic_creation bool 4+ default=true
include_cluster_authorized_operations bool 8-10
include_topic_authorized_operations bool 8+
""",
    response="""
throttle_time_ms int32 3+
brokers [struct] 0+
  node_id int32 0+
  host string 0+
  port int32 0+
  rack string 1+ null=1+ default=null
cluster_id string 2+ null=2+ default=null
controller_id int32 1+ default=-1
topics [struct] 0+
  error_code int16 0+
  name string 0+ null=12+
  topic_id uuid 10+
  is_internal bool 1+ default=false
  partitions [struct] 0+
    error_code int16 0+
    partition_index int32 0+
    leader_id int32 0+
    leader_epoch int32 7+ default=-1
    replica_nodes [int32] 0+
    isr_nodes [int32] 0+
    offline_replicas [int32] 5+
  topic_authorized_operations int32 8+ default=-2147483648
cluster_authorized_operations int32 8-10 default=-2147483648
""",
)

OFFSET_COMMIT = _api(
    8,
    "OffsetCommit",
    "2-8",
    "8+",
    request="""
group_id string 0+
generation_id_or_member_epoch int32 1+ default=-1
member_id string 1+
group_instance_id string 7+ null=7+ default=null
retention_time_ms int64 2-4 default=-1
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    committed_offset int64 0+
    committed_leader_epoch int32 6+ default=-1
    commit_timestamp int64 1 default=-1
    committed_metadata string 0+ null=0+
""",
    response="""
throttle_time_ms int32 3+
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    error_code int16 0+
""",
)

OFFSET_FETCH = _api(
    9,
    "OffsetFetch",
    "1-8",
    "6+",
    request="""
group_id string 0-7
topics [struct] 0-7 null=2-7
  name string 0-7
  partition_indexes [int32] 0-7
groups [struct] 8+
  group_id string 8+
  topics [struct] 8+ null=8+
    name string 8+
    partition_indexes [int32] 8+
require_stable bool 7+ default=false
""",
    response="""
throttle_time_ms int32 3+
topics [struct] 0-7
  name string 0-7
  partitions [struct] 0-7
    partition_index int32 0-7
    committed_offset int64 0-7
    committed_leader_epoch int32 5-7 default=-1
    metadata string 0-7 null=0-7
    error_code int16 0-7
error_code int16 2-7 default=0
groups [struct] 8+
  group_id string 8+
  topics [struct] 8+
    name string 8+
    partitions [struct] 8+
      partition_index int32 8+
      committed_offset int64 8+
      committed_leader_epoch int32 8+ default=-1
      metadata string 8+ null=8+
      error_code int16 8+
  error_code int16 8+ default=0
""",
)

FIND_COORDINATOR = _api(
    10,
    "FindCoordinator",
    "0-4",
    "3+",
    request="""
key string 0-3
key_type int8 1+ default=0
coordinator_keys [string] 4+
""",
    response="""
throttle_time_ms int32 1+
error_code int16 0-3
error_message string 1-3 null=1-3
node_id int32 0-3
host string 0-3
port int32 0-3
coordinators [struct] 4+
  key string 4+
  node_id int32 4+
  host string 4+
  port int32 4+
  error_code int16 4+
  error_message string 4+ null=4+
""",
)

JOIN_GROUP = _api(
    11,
    "JoinGroup",
    "0-8",
    "6+",
    request="""
group_id string 0+
session_timeout_ms int32 0+
rebalance_timeout_ms int32 1+ default=-1
member_id string 0+
group_instance_id string 5+ null=5+ default=null
protocol_type string 0+
protocols [struct] 0+
  name string 0+
  metadata bytes 0+
reason string 8+ null=8+ default=null
""",
    response="""
throttle_time_ms int32 2+
error_code int16 0+
generation_id int32 0+ default=-1
protocol_type string 7+ null=7+ default=null
protocol_name string 0+ null=7+
leader string 0+
member_id string 0+
members [struct] 0+
  member_id string 0+
  group_instance_id string 5+ null=5+ default=null
  metadata bytes 0+
""",
)

HEARTBEAT = _api(
    12,
    "Heartbeat",
    "0-4",
    "4+",
    request="""
group_id string 0+
generation_id int32 0+
member_id string 0+
group_instance_id string 3+ null=3+ default=null
""",
    response="""
throttle_time_ms int32 1+
error_code int16 0+
""",
)

LEAVE_GROUP = _api(
    13,
    "LeaveGroup",
    "0-5",
    "4+",
    request="""
group_id string 0+
member_id string 0-2
members [struct] 3+
  member_id string 3+
  group_instance_id string 3+ null=3+ default=null
  reason string 5+ null=5+ default=null
""",
    response="""
throttle_time_ms int32 1+
error_code int16 0+
members [struct] 3+
  member_id string 3+
  group_instance_id string 3+ null=3+
  error_code int16 3+
""",
)

SYNC_GROUP = _api(
    14,
    "SyncGroup",
    "0-5",
    "4+",
    request="""
group_id string 0+
generation_id int32 0+
member_id string 0+
group_instance_id string 3+ null=3+ default=null
protocol_type string 5+ null=5+ default=null
protocol_name string 5+ null=5+ default=null
assignments [struct] 0+
  member_id string 0+
  assignment bytes 0+
""",
    response="""
throttle_time_ms int32 1+
error_code int16 0+
protocol_type string 5+ null=5+ default=null
protocol_name string 5+ null=5+ default=null
assignment bytes 0+
""",
)

DESCRIBE_GROUPS = _api(
    15,
    "DescribeGroups",
    "0-5",
    "5+",
    request="""
groups [string] 0+
include_authorized_operations bool 3+
""",
    response="""
throttle_time_ms int32 1+
groups [struct] 0+
  error_code int16 0+
  group_id string 0+
  group_state string 0+
  protocol_type string 0+
  protocol_data string 0+
  members [struct] 0+
    member_id string 0+
    group_instance_id string 4+ null=4+ default=null
    client_id string 0+
    client_host string 0+
    member_metadata bytes 0+
    member_assignment bytes 0+
  authorized_operations int32 3+ default=-2147483648
""",
)

LIST_GROUPS = _api(
    16,
    "ListGroups",
    "0-4",
    "3+",
    request="""
states_filter [string] 4+
""",
    response="""
throttle_time_ms int32 1+
error_code int16 0+
groups [struct] 0+
  group_id string 0+
  protocol_type string 0+
  group_state string 4+
""",
)

API_VERSIONS = _api(
    18,
    "ApiVersions",
    "0-3",
    "3+",
    request="""
client_software_name string 3+
client_software_version string 3+
""",
    response="""
error_code int16 0+
api_keys [struct] 0+
  api_key int16 0+
  min_version int16 0+
  max_version int16 0+
throttle_time_ms int32 1+
""",
)

CREATE_TOPICS = _api(
    19,
    "CreateTopics",
    "2-7",
    "5+",
    request="""
topics [struct] 0+
  name string 0+
  num_partitions int32 0+
  replication_factor int16 0+
  assignments [struct] 0+
    partition_index int32 0+
    broker_ids [int32] 0+
  configs [struct] 0+
    name string 0+
    value string 0+ null=0+
timeout_ms int32 0+ default=60000
validate_only bool 1+ default=false
""",
    response="""
throttle_time_ms int32 2+
topics [struct] 0+
  name string 0+
  topic_id uuid 7+
  error_code int16 0+
  error_message string 1+ null=0+
  num_partitions int32 5+ default=-1
  replication_factor int16 5+ default=-1
  configs [struct] 5+ null=5+
    name string 5+
    value string 5+ null=5+
    read_only bool 5+
    config_source int8 5+ default=-1
    is_sensitive bool 5+
""",
)

DELETE_TOPICS = _api(
    20,
    "DeleteTopics",
    "1-6",
    "4+",
    request="""
topics [struct] 6+
  name string 6+ null=6+ default=null
  topic_id uuid 6+
topic_names [string] 0-5
timeout_ms int32 0+
""",
    response="""
throttle_time_ms int32 1+
responses [struct] 0+
  name string 0+ null=6+
  topic_id uuid 6+
  error_code int16 0+
  error_message string 5+ null=5+ default=null
""",
)

INIT_PRODUCER_ID = _api(
    22,
    "InitProducerId",
    "0-4",
    "2+",
    request="""
transactional_id string 0+ null=0+
transaction_timeout_ms int32 0+
producer_id int64 3+ default=-1
producer_epoch int16 3+ default=-1
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
producer_id int64 0+ default=-1
producer_epoch int16 0+
""",
)

DESCRIBE_CONFIGS = _api(
    32,
    "DescribeConfigs",
    "1-4",
    "4+",
    request="""
resources [struct] 0+
  resource_type int8 0+
  resource_name string 0+
  configuration_keys [string] 0+ null=0+
include_synonyms bool 1+ default=false
include_documentation bool 3+ default=false
""",
    response="""
throttle_time_ms int32 0+
results [struct] 0+
  error_code int16 0+
  error_message string 0+ null=0+
  resource_type int8 0+
  resource_name string 0+
  configs [struct] 0+
    name string 0+
    value string 0+ null=0+
    read_only bool 0+
    config_source int8 1+ default=-1
    is_sensitive bool 0+
    synonyms [struct] 1+
      name string 1+
      value string 1+ null=0+
      source int8 1+
    config_type int8 3+ default=0
    documentation string 3+ null=0+
""",
)

CREATE_PARTITIONS = _api(
    37,
    "CreatePartitions",
    "0-3",
    "2+",
    request="""
topics [struct] 0+
  name string 0+
  count int32 0+
  assignments [struct] 0+ null=0+
    broker_ids [int32] 0+
timeout_ms int32 0+
validate_only bool 0+
""",
    response="""
throttle_time_ms int32 0+
results [struct] 0+
  name string 0+
  error_code int16 0+
  error_message string 0+ null=0+ default=null
""",
)

SASL_HANDSHAKE = _api(
    17,
    "SaslHandshake",
    "1",
    "none",
    request="""
mechanism string 0+
""",
    response="""
error_code int16 0+
mechanisms [string] 0+
""",
)

SASL_AUTHENTICATE = _api(
    36,
    "SaslAuthenticate",
    "0-2",
    "2+",
    request="""
auth_bytes bytes 0+
""",
    response="""
error_code int16 0+
error_message string 0+ null=0+
auth_bytes bytes 0+
session_lifetime_ms int64 1+ default=0
""",
)

OFFSET_FOR_LEADER_EPOCH = _api(
    23,
    "OffsetForLeaderEpoch",
    "2-4",
    "4+",
    request="""
replica_id int32 3+ default=-2
topics [struct] 0+
  topic string 0+
  partitions [struct] 0+
    partition int32 0+
    current_leader_epoch int32 2+ default=-1
    leader_epoch int32 0+
""",
    response="""
throttle_time_ms int32 2+
topics [struct] 0+
  topic string 0+
  partitions [struct] 0+
    error_code int16 0+
    partition int32 0+
    leader_epoch int32 1+ default=-1
    end_offset int64 0+ default=-1
""",
)

# ---- transactions (KIP-98; handlers in node/kafka/txn_apis.py) ------------------------------

ADD_PARTITIONS_TO_TXN = _api(
    24,
    "AddPartitionsToTxn",
    "0-3",
    "3+",
    request="""
transactional_id string 0+
producer_id int64 0+
producer_epoch int16 0+
topics [struct] 0+
  name string 0+
  partitions [int32] 0+
""",
    response="""
throttle_time_ms int32 0+
results [struct] 0+
  name string 0+
  results [struct] 0+
    partition_index int32 0+
    partition_error_code int16 0+
""",
)

ADD_OFFSETS_TO_TXN = _api(
    25,
    "AddOffsetsToTxn",
    "0-3",
    "3+",
    request="""
transactional_id string 0+
producer_id int64 0+
producer_epoch int16 0+
group_id string 0+
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
""",
)

END_TXN = _api(
    26,
    "EndTxn",
    "0-3",
    "3+",
    request="""
transactional_id string 0+
producer_id int64 0+
producer_epoch int16 0+
committed bool 0+
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
""",
)

TXN_OFFSET_COMMIT = _api(
    28,
    "TxnOffsetCommit",
    "0-3",
    "3+",
    request="""
transactional_id string 0+
group_id string 0+
producer_id int64 0+
producer_epoch int16 0+
generation_id int32 3+ default=-1
member_id string 3+ default=
group_instance_id string 3+ null=3+ default=null
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    committed_offset int64 0+
    committed_leader_epoch int32 2+ default=-1
    committed_metadata string 0+ null=0+
""",
    response="""
throttle_time_ms int32 0+
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    error_code int16 0+
""",
)

# ---- admin: records, configs, cluster, leaders, reassignments, ACLs, log dirs, groups ----------
# Answered by node/kafka/admin_apis.py. ACL APIs start at v1 (pattern types), as in Kafka 4.

DELETE_RECORDS = _api(
    21,
    "DeleteRecords",
    "0-2",
    "2+",
    request="""
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    offset int64 0+
timeout_ms int32 0+
""",
    response="""
throttle_time_ms int32 0+
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    low_watermark int64 0+
    error_code int16 0+
""",
)

DESCRIBE_ACLS = _api(
    29,
    "DescribeAcls",
    "1-3",
    "2+",
    request="""
resource_type_filter int8 0+
resource_name_filter string 0+ null=0+
pattern_type_filter int8 1+ default=3
principal_filter string 0+ null=0+
host_filter string 0+ null=0+
operation int8 0+
permission_type int8 0+
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
error_message string 0+ null=0+
resources [struct] 0+
  resource_type int8 0+
  resource_name string 0+
  pattern_type int8 1+ default=3
  acls [struct] 0+
    principal string 0+
    host string 0+
    operation int8 0+
    permission_type int8 0+
""",
)

CREATE_ACLS = _api(
    30,
    "CreateAcls",
    "1-3",
    "2+",
    request="""
creations [struct] 0+
  resource_type int8 0+
  resource_name string 0+
  resource_pattern_type int8 1+ default=3
  principal string 0+
  host string 0+
  operation int8 0+
  permission_type int8 0+
""",
    response="""
throttle_time_ms int32 0+
results [struct] 0+
  error_code int16 0+
  error_message string 0+ null=0+
""",
)

DELETE_ACLS = _api(
    31,
    "DeleteAcls",
    "1-3",
    "2+",
    request="""
filters [struct] 0+
  resource_type_filter int8 0+
  resource_name_filter string 0+ null=0+
  pattern_type_filter int8 1+ default=3
  principal_filter string 0+ null=0+
  host_filter string 0+ null=0+
  operation int8 0+
  permission_type int8 0+
""",
    response="""
throttle_time_ms int32 0+
filter_results [struct] 0+
  error_code int16 0+
  error_message string 0+ null=0+
  matching_acls [struct] 0+
    error_code int16 0+
    error_message string 0+ null=0+
    resource_type int8 0+
    resource_name string 0+
    pattern_type int8 1+ default=3
    principal string 0+
    host string 0+
    operation int8 0+
    permission_type int8 0+
""",
)

ALTER_CONFIGS = _api(
    33,
    "AlterConfigs",
    "0-2",
    "2+",
    request="""
resources [struct] 0+
  resource_type int8 0+
  resource_name string 0+
  configs [struct] 0+
    name string 0+
    value string 0+ null=0+
validate_only bool 0+
""",
    response="""
throttle_time_ms int32 0+
responses [struct] 0+
  error_code int16 0+
  error_message string 0+ null=0+
  resource_type int8 0+
  resource_name string 0+
""",
)

DESCRIBE_LOG_DIRS = _api(
    35,
    "DescribeLogDirs",
    "1-4",
    "2+",
    request="""
topics [struct] 0+ null=0+
  topic string 0+
  partitions [int32] 0+
""",
    response="""
throttle_time_ms int32 0+
error_code int16 3+
results [struct] 0+
  error_code int16 0+
  log_dir string 0+
  topics [struct] 0+
    name string 0+
    partitions [struct] 0+
      partition_index int32 0+
      partition_size int64 0+
      offset_lag int64 0+
      is_future_key bool 0+
  total_bytes int64 4+ default=-1
  usable_bytes int64 4+ default=-1
""",
)

DELETE_GROUPS = _api(
    42,
    "DeleteGroups",
    "0-2",
    "2+",
    request="""
groups_names [string] 0+
""",
    response="""
throttle_time_ms int32 0+
results [struct] 0+
  group_id string 0+
  error_code int16 0+
""",
)

ELECT_LEADERS = _api(
    43,
    "ElectLeaders",
    "0-2",
    "2+",
    request="""
election_type int8 1+
topic_partitions [struct] 0+ null=0+
  topic string 0+
  partitions [int32] 0+
timeout_ms int32 0+ default=60000
""",
    response="""
throttle_time_ms int32 0+
error_code int16 1+
replica_election_results [struct] 0+
  topic string 0+
  partition_result [struct] 0+
    partition_id int32 0+
    error_code int16 0+
    error_message string 0+ null=0+
""",
)

INCREMENTAL_ALTER_CONFIGS = _api(
    44,
    "IncrementalAlterConfigs",
    "0-1",
    "1+",
    request="""
resources [struct] 0+
  resource_type int8 0+
  resource_name string 0+
  configs [struct] 0+
    name string 0+
    config_operation int8 0+
    value string 0+ null=0+
validate_only bool 0+
""",
    response="""
throttle_time_ms int32 0+
responses [struct] 0+
  error_code int16 0+
  error_message string 0+ null=0+
  resource_type int8 0+
  resource_name string 0+
""",
)

ALTER_PARTITION_REASSIGNMENTS = _api(
    45,
    "AlterPartitionReassignments",
    "0-1",
    "0+",
    request="""
timeout_ms int32 0+ default=60000
allow_replication_factor_change bool 1+ default=true
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    replicas [int32] 0+ null=0+ default=null
""",
    response="""
throttle_time_ms int32 0+
allow_replication_factor_change bool 1+ default=true
error_code int16 0+
error_message string 0+ null=0+
responses [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    error_code int16 0+
    error_message string 0+ null=0+
""",
)

LIST_PARTITION_REASSIGNMENTS = _api(
    46,
    "ListPartitionReassignments",
    "0",
    "0+",
    request="""
timeout_ms int32 0+ default=60000
topics [struct] 0+ null=0+ default=null
  name string 0+
  partition_indexes [int32] 0+
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
error_message string 0+ null=0+
topics [struct] 0+
  name string 0+
  partitions [struct] 0+
    partition_index int32 0+
    replicas [int32] 0+
    adding_replicas [int32] 0+
    removing_replicas [int32] 0+
""",
)

DESCRIBE_CLUSTER = _api(
    60,
    "DescribeCluster",
    "0-1",
    "0+",
    request="""
include_cluster_authorized_operations bool 0+
endpoint_type int8 1+ default=1
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
error_message string 0+ null=0+ default=null
endpoint_type int8 1+ default=1
cluster_id string 0+
controller_id int32 0+ default=-1
brokers [struct] 0+
  broker_id int32 0+
  host string 0+
  port int32 0+
  rack string 0+ null=0+ default=null
cluster_authorized_operations int32 0+ default=-2147483648
""",
)

DESCRIBE_USER_SCRAM_CREDENTIALS = _api(
    50,
    "DescribeUserScramCredentials",
    "0",
    "0+",
    request="""
users [struct] 0+ null=0+
  name string 0+
""",
    response="""
throttle_time_ms int32 0+
error_code int16 0+
error_message string 0+ null=0+ default=null
results [struct] 0+
  user string 0+
  error_code int16 0+
  error_message string 0+ null=0+ default=null
  credential_infos [struct] 0+
    mechanism int8 0+
    iterations int32 0+
""",
)

ALTER_USER_SCRAM_CREDENTIALS = _api(
    51,
    "AlterUserScramCredentials",
    "0",
    "0+",
    request="""
deletions [struct] 0+
  name string 0+
  mechanism int8 0+
upsertions [struct] 0+
  name string 0+
  mechanism int8 0+
  iterations int32 0+
  salt bytes 0+
  salted_password bytes 0+
""",
    response="""
throttle_time_ms int32 0+
results [struct] 0+
  user string 0+
  error_code int16 0+
  error_message string 0+ null=0+ default=null
""",
)

# What a SASL listener answers before the client has authenticated.
BEFORE_AUTHENTICATION = frozenset({API_VERSIONS.key, SASL_HANDSHAKE.key, SASL_AUTHENTICATE.key})

APIS: dict[int, Api] = {
    api.key: api
    for api in (
        PRODUCE,
        FETCH,
        LIST_OFFSETS,
        METADATA,
        OFFSET_COMMIT,
        OFFSET_FETCH,
        FIND_COORDINATOR,
        JOIN_GROUP,
        HEARTBEAT,
        LEAVE_GROUP,
        SYNC_GROUP,
        DESCRIBE_GROUPS,
        LIST_GROUPS,
        API_VERSIONS,
        CREATE_TOPICS,
        DELETE_TOPICS,
        INIT_PRODUCER_ID,
        DESCRIBE_CONFIGS,
        CREATE_PARTITIONS,
        SASL_HANDSHAKE,
        SASL_AUTHENTICATE,
        OFFSET_FOR_LEADER_EPOCH,
        ADD_PARTITIONS_TO_TXN,
        ADD_OFFSETS_TO_TXN,
        END_TXN,
        TXN_OFFSET_COMMIT,
        DELETE_RECORDS,
        DESCRIBE_ACLS,
        CREATE_ACLS,
        DELETE_ACLS,
        ALTER_CONFIGS,
        DESCRIBE_LOG_DIRS,
        DELETE_GROUPS,
        ELECT_LEADERS,
        INCREMENTAL_ALTER_CONFIGS,
        ALTER_PARTITION_REASSIGNMENTS,
        LIST_PARTITION_REASSIGNMENTS,
        DESCRIBE_CLUSTER,
        DESCRIBE_USER_SCRAM_CREDENTIALS,
        ALTER_USER_SCRAM_CREDENTIALS,
    )
}
