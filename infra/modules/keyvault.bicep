// The managed vault: RBAC authorization, soft delete with purge protection (a revoked or rotated-away
// version stays recoverable for the retention period).
param name string
param location string
param create bool

@description('true: reachable only through a private endpoint (modules/network.bicep).')
param privateNetworking bool = false

@description('Log Analytics workspace that keeps the vault\'s AuditEvent log (who read or changed which secret).')
param workspaceId string

resource created 'Microsoft.KeyVault/vaults@2023-07-01' = if (create) {
  // checkov drops the properties of a resource with a condition, and reports these as missing although
  // they are set below:
  // checkov:skip=CKV_AZURE_110: purge protection is enabled (enablePurgeProtection: true)
  // checkov:skip=CKV_AZURE_42: soft delete is enabled for 90 days with purge protection
  // checkov:skip=CKV_AZURE_109: networkAcls are set: Deny with privateNetworking=true
  // checkov:skip=CKV_AZURE_189: public network access is disabled with privateNetworking=true; a first deploy keeps it (RBAC, Entra tokens only)
  name: name
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: { defaultAction: privateNetworking ? 'Deny' : 'Allow', bypass: 'AzureServices' }
  }
}

resource existing 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (!create) {
  name: name
}

// Key Vault's own access log, kept next to the service's audit trail: every read of a secret by any caller.
resource createdDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (create) {
  name: 'audit-to-log-analytics'
  scope: created
  properties: {
    workspaceId: workspaceId
    logs: [ { categoryGroup: 'audit', enabled: true } ]
  }
}

resource existingDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!create) {
  name: 'audit-to-log-analytics'
  scope: existing
  properties: {
    workspaceId: workspaceId
    logs: [ { categoryGroup: 'audit', enabled: true } ]
  }
}

output name string = name
output id string = create ? created.id : existing.id
output uri string = create ? created.properties.vaultUri : existing.properties.vaultUri
