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

@description('Entra application (client) id for App Service Authentication. Empty: Easy Auth is not configured here and every protected HTTP endpoint answers 401.')
param authClientId string = ''

@description('Tenant of the Entra application used by App Service Authentication.')
param authTenantId string = subscription().tenantId

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
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    create: empty(existingKeyVaultName)
    workspaceId: monitoring.outputs.workspaceId
  }
}

module topic 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  params: {
    name: 'evgt-${baseName}-${suffix}'
    location: location
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
    tableServiceUri: storage.outputs.tableEndpoint
    queueServiceUri: storage.outputs.queueEndpoint
    eventGridTopicEndpoint: topic.outputs.endpoint
    authClientId: authClientId
    authTenantId: authTenantId
  }
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

// Not here, on purpose: the Key Vault system topic and its subscription to the app's key_vault_events
// function are infra/events.bicep, a second deployment step after the code is published (the
// subscription's endpoint is a function that exists only then).
