// One account for the Functions host (AzureWebJobsStorage: timer locks, deployment package) and for the
// service's own tables and queues (SECRETS_STORAGE). Shared keys are disabled: identity only.
param name string
param location string
param deploymentContainerName string
@description('Tables of the service (SECRETS_STORAGE), created with the account: the app\'s health check reports a missing audit table, so a fresh deployment must have them before the app serves.')
param tableNames array
@description('Blob container of the audit archive (AUDIT_ARCHIVE_CONTAINER): audit records past AUDIT_RETENTION_DAYS, exported with their MACs, one append blob per chain. The app never creates it: one made on the fly would have no retention policy.')
param auditArchiveContainerName string = 'auditarchive'
@description('Days an archived audit blob stays immutable (the container\'s time-based retention policy). 2557: seven years.')
@minValue(1)
@maxValue(146000)
param auditArchiveImmutableDays int = 2557
@description('true once an operator has locked the archive\'s retention policy: a locked policy accepts no PUT (only an extension), so the deployment must leave it alone.')
param auditArchivePolicyLocked bool = false
@description('Replication of the account that holds the audit trail: geo-zone-redundant by default, a copy in the paired region that a regional outage or a lost datacenter does not take with it.')
@allowed([ 'Standard_ZRS', 'Standard_GZRS', 'Standard_RAGZRS', 'Standard_GRS', 'Standard_RAGRS' ])
param redundancy string = 'Standard_GZRS'
@description('true: reachable only through private endpoints (modules/network.bicep).')
param privateNetworking bool = false
@description('Log Analytics workspace for the account\'s and its services\' logs: who read, wrote or deleted which row.')
param workspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  kind: 'StorageV2'
  sku: { name: redundancy }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    // checkov:skip=CKV_AZURE_35: denied with privateNetworking=true; a first deploy allows the network (identity-only access, shared keys off) so the package can be published from outside
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: { defaultAction: privateNetworking ? 'Deny' : 'Allow', bypass: 'AzureServices' }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource deployment 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainerName
}

resource auditArchive 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: auditArchiveContainerName
  properties: { publicAccess: 'None' }
}

// Write once, read many: blocks can be appended to an existing append blob (allowProtectedAppendWrites), but
// nothing written can be overwritten or deleted until the period has passed. The policy is created
// unlocked: while unlocked, anyone with the management-plane permission can shorten or delete it. Locking
// is an operator's deliberate and irreversible step (the account then cannot be deleted while blobs are
// protected, and the period can only be extended), taken once the export has been seen to work:
//   etag=$(az storage container immutability-policy show -g <resource-group> --account-name <account> \
//     --container-name auditarchive --query etag -o tsv)
//   az storage container immutability-policy lock -g <resource-group> --account-name <account> \
//     --container-name auditarchive --if-match "$etag"
// Then deploy with auditArchivePolicyLocked=true: a locked policy refuses the PUT this resource would send.
resource auditArchivePolicy 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!auditArchivePolicyLocked) {
  parent: auditArchive
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditArchiveImmutableDays
    allowProtectedAppendWrites: true
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// Every read, write and delete of a row, blob or message with the caller's identity: after tampering with
// the audit table, this log (outside the account) says who did it.
resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: workspaceId
    metrics: [ { category: 'Transaction', enabled: true } ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: [ { categoryGroup: 'allLogs', enabled: true } ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobs
  properties: {
    workspaceId: workspaceId
    logs: [ { categoryGroup: 'allLogs', enabled: true } ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: workspaceId
    logs: [ { categoryGroup: 'allLogs', enabled: true } ]
  }
}

output name string = account.name
output id string = account.id
output tableEndpoint string = account.properties.primaryEndpoints.table
output queueEndpoint string = account.properties.primaryEndpoints.queue
output blobEndpoint string = account.properties.primaryEndpoints.blob
output auditArchiveContainerName string = auditArchive.name
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainerName}'
