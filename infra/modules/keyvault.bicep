// The managed vault: RBAC authorization, soft delete with purge protection (a revoked or rotated-away
// version stays recoverable for the retention period).
param name string
param location string
param create bool

@description('Log Analytics workspace that keeps the vault\'s AuditEvent log (who read or changed which secret).')
param workspaceId string

resource created 'Microsoft.KeyVault/vaults@2023-07-01' = if (create) {
  name: name
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
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
output uri string = create ? created.properties.vaultUri : existing.properties.vaultUri
