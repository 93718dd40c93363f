// The managed vault: RBAC authorization, soft delete with purge protection (a revoked or rotated-away
// version stays recoverable for the retention period).
param name string
param location string
param create bool

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

output name string = name
output uri string = create ? created.properties.vaultUri : existing.properties.vaultUri
