// Secret lifecycle service: Function App (Flex Consumption, Python 3.11) with a system-assigned identity,
// the storage account for its tables/queues and the Functions host, the Key Vault it manages, the Event
// Grid topic for consumer notifications, and monitoring. Every data-plane access is Entra ID (RBAC):
// no storage keys or topic keys in app settings.
targetScope = 'resourceGroup'

@description('Short name used to derive resource names (3-11 lowercase letters/digits).')
@minLength(3)
@maxLength(11)
param baseName string

@description('Azure region.')
param location string = resourceGroup().location

@description('Existing Key Vault to manage, in this resource group and in RBAC mode (enableRbacAuthorization); role assignments have no effect on a vault that uses access policies. Empty: create one.')
param existingKeyVaultName string = ''

@description('More vaults whose secrets the app manages, comma-separated base URLs (https://<name>.vault.azure.net). Each must be in RBAC mode with the app granted Key Vault Secrets Officer on it, and have its own Key Vault event subscription (docs/deploy.md). The audit key and anchor stay in the vault above.')
param additionalKeyVaultUrls string = ''

@description('Entra application (client) id for App Service Authentication. Empty: Easy Auth is not configured here and every protected HTTP endpoint answers 401.')
param authClientId string = ''

@description('Tenant of the Entra application used by App Service Authentication.')
param authTenantId string = subscription().tenantId

@description('Audit records older than this many days are exported to the immutable archive container with their MACs, then removed from the audit table. 0: every record stays in the table (the export is opt-in); otherwise at least 400 (the app refuses less).')
@minValue(0)
@maxValue(36500)
param auditRetentionDays int = 0

@description('Days each archived audit blob stays immutable (the archive container\'s time-based retention policy). 2557: seven years.')
@minValue(1)
@maxValue(146000)
param auditArchiveImmutableDays int = 2557

@description('true once an operator has locked the archive container\'s retention policy (modules/storage.bicep): a locked policy refuses updates, so the deployment leaves it alone.')
param auditArchivePolicyLocked bool = false

@description('true: the vault, the storage account and the topic are reachable only through private endpoints in a new virtual network, which the app reaches through VNet integration (modules/network.bicep). Off for a first deploy: publishing the package and running the events step from outside then needs a machine in that network (docs/deploy.md).')
param privateNetworking bool = false

@description('Replication of the storage account that holds the audit trail (geo-zone-redundant by default).')
@allowed([ 'Standard_ZRS', 'Standard_GZRS', 'Standard_RAGZRS', 'Standard_GRS', 'Standard_RAGRS' ])
param storageRedundancy string = 'Standard_GZRS'

var suffix = uniqueString(resourceGroup().id, baseName)
var storageName = toLower(take('st${baseName}${suffix}', 24))
var functionAppName = 'func-${baseName}-${suffix}'
var keyVaultName = empty(existingKeyVaultName) ? take('kv-${baseName}-${suffix}', 24) : existingKeyVaultName

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    name: baseName
    location: location
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageName
    location: location
    deploymentContainerName: 'app-package'
    // shared/adapters/tables: AUDIT_TABLE, AUDIT_INDEX_TABLE, FINDINGS_TABLE, STATE_TABLE (devtools/stack.py
    // creates them locally).
    tableNames: [
      'auditlog'
      'auditlogindex'
      'auditfindings'
      'secretstate'
    ]
    auditArchiveImmutableDays: auditArchiveImmutableDays
    auditArchivePolicyLocked: auditArchivePolicyLocked
    redundancy: storageRedundancy
    privateNetworking: privateNetworking
    workspaceId: monitoring.outputs.workspaceId
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    create: empty(existingKeyVaultName)
    workspaceId: monitoring.outputs.workspaceId
    privateNetworking: privateNetworking
  }
}

module topic 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  params: {
    name: 'evgt-${baseName}-${suffix}'
    location: location
    privateNetworking: privateNetworking
    workspaceId: monitoring.outputs.workspaceId
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  params: {
    name: '${baseName}-${suffix}'
    location: location
    keyVaultId: vault.outputs.id
    storageAccountId: storage.outputs.id
    topicId: topic.outputs.id
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: functionAppName
    location: location
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    keyVaultUrl: vault.outputs.uri
    keyVaultUrls: additionalKeyVaultUrls
    tableServiceUri: storage.outputs.tableEndpoint
    queueServiceUri: storage.outputs.queueEndpoint
    blobServiceUri: storage.outputs.blobEndpoint
    auditArchiveContainerName: storage.outputs.auditArchiveContainerName
    auditRetentionDays: auditRetentionDays
    eventGridTopicEndpoint: topic.outputs.endpoint
    authClientId: authClientId
    authTenantId: authTenantId
    // As modules/network.bicep names it: known before the network exists, so no output of a module
    // that may not be deployed is read.
    subnetId: privateNetworking ? resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet-${baseName}-${suffix}', 'app') : ''
    workspaceId: monitoring.outputs.workspaceId
  }
  dependsOn: [ network ]
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: app.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
    topicName: topic.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

output functionAppName string = app.outputs.name
output functionAppHostName string = app.outputs.defaultHostName
output keyVaultUri string = vault.outputs.uri
output eventGridTopicEndpoint string = topic.outputs.endpoint
// The same, as azd keeps them in its environment (azure.yaml's hooks read them).
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${app.outputs.defaultHostName}'
output AZURE_KEY_VAULT_URI string = vault.outputs.uri

// Not here, on purpose: the Key Vault system topic and its subscription to the app's key_vault_events
// function are infra/events.bicep, a second deployment step after the code is published (the
// subscription's endpoint is a function that exists only then).
