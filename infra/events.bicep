// Second deployment step: Key Vault's secret events to the app's key_vault_events function. Run it after
// `func azure functionapp publish` (the subscription's endpoint is a function that exists only then), with
// the same baseName (and existingKeyVaultName) as infra/main.bicep: the resource names are derived alike.
targetScope = 'resourceGroup'

@description('The baseName given to infra/main.bicep.')
@minLength(3)
@maxLength(11)
param baseName string

@description('The existingKeyVaultName given to infra/main.bicep, if any.')
param existingKeyVaultName string = ''

// As in infra/main.bicep.
var suffix = uniqueString(resourceGroup().id, baseName)
var storageName = toLower(take('st${baseName}${suffix}', 24))
var functionAppName = 'func-${baseName}-${suffix}'
var keyVaultName = empty(existingKeyVaultName) ? take('kv-${baseName}-${suffix}', 24) : existingKeyVaultName

module events 'modules/keyvault-events.bicep' = {
  name: 'keyvault-events'
  params: {
    keyVaultName: keyVaultName
    functionAppName: functionAppName
    storageAccountName: storageName
    systemTopicName: 'evgst-${baseName}-${suffix}'
  }
}

output systemTopicName string = events.outputs.systemTopicName
output deadLetterContainerName string = events.outputs.deadLetterContainerName
