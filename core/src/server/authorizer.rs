//! What a client may do with a resource: the `*_authorized_operations`
//! bit sets of Metadata (v8+), DescribeCluster and DescribeGroups (v3+),
//! and the check of requests that need an operation ([`is_authorized`]).
//!
//! Runnel has no ACLs yet, so every client may do everything, and the answer
//! is what Kafka answers without an authorizer: every operation the resource
//! type supports. This is the one place that computes it; an ACL authorizer
//! replaces [`authorized_operations`] and nothing else changes.
//!
//! ```text
//! bit set = OR of (1 << operation code)     (Kafka's AclOperation codes)
//!   READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
//!   CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
//!   IDEMPOTENT_WRITE 12
//! ```

/// "Authorized operations were not requested" (Kafka's sentinel).
pub const OMITTED: i32 = i32::MIN;

/// The resource types that carry authorized operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
}

/// Kafka's ACL operations (`AclOperation` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Operation {
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
}

/// The operations a resource type has (Kafka's `AclEntry.supportedOperations`).
pub fn supported_operations(resource: Resource<'_>) -> &'static [Operation] {
    use Operation::*;
    match resource {
        Resource::Topic(_) => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
        ],
        Resource::Group(_) => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
        Resource::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
    }
}

/// The bit set of operations the client may perform on `resource`. Without
/// ACLs that is every supported operation, as in Kafka without an
/// authorizer.
pub fn authorized_operations(resource: Resource<'_>) -> i32 {
    supported_operations(resource)
        .iter()
        .fold(0, |bits, op| bits | 1 << *op as u8)
}

/// Whether the client may perform `operation` on `resource`, the check of
/// every request that needs an operation (ElectLeaders: ALTER on the
/// cluster, ListPartitionReassignments: DESCRIBE on it). Without ACLs:
/// every operation the resource type has, as Kafka without an authorizer.
pub fn is_authorized(resource: Resource<'_>, operation: Operation) -> bool {
    supported_operations(resource).contains(&operation)
}

/// The field's value: the bit set when the client asked for it, else
/// [`OMITTED`].
pub fn if_requested(requested: bool, resource: Resource<'_>) -> i32 {
    if requested {
        authorized_operations(resource)
    } else {
        OMITTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_acls_every_supported_operation_is_allowed_with_kafkas_bits() {
        // The values a Kafka broker without an authorizer answers.
        // Topic: READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS
        // ALTER_CONFIGS = bits 3-8, 10, 11.
        assert_eq!(
            authorized_operations(Resource::Topic("t")),
            0b1101_1111_1000
        );
        assert_eq!(
            authorized_operations(Resource::Group("g")),
            0b1101_0100_1000
        );
        assert_eq!(authorized_operations(Resource::Cluster), 0b1_1111_1010_0000);
        assert_eq!(if_requested(false, Resource::Cluster), i32::MIN);
    }

    #[test]
    fn checks_allow_what_the_resource_type_has_and_nothing_else() {
        assert!(is_authorized(Resource::Cluster, Operation::Alter));
        assert!(is_authorized(Resource::Cluster, Operation::Describe));
        assert!(!is_authorized(Resource::Group("g"), Operation::Alter));
        assert!(!is_authorized(
            Resource::Topic("t"),
            Operation::ClusterAction
        ));
    }
}
