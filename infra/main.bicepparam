using './main.bicep'

// The environment's values when set (azd sets SECRETS_BASE_NAME and AUTH_CLIENT_ID in its hooks), else these.
param baseName = readEnvironmentVariable('SECRETS_BASE_NAME', 'fleetsec')
param authClientId = readEnvironmentVariable('AUTH_CLIENT_ID', '')

// Audit retention: 0 keeps every record in the audit table; N exports records older than N days to the
// immutable archive container (with their MACs) and removes them from the table.
param auditRetentionDays = 0
// How long archived audit blobs stay immutable: seven years.
param auditArchiveImmutableDays = 2557
// Set to true after locking the archive's retention policy (see infra/modules/storage.bicep).
param auditArchivePolicyLocked = false
