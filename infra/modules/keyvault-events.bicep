// Key Vault's secret events to the app: the vault's Event Grid system topic and a subscription that
// delivers SecretNearExpiry, SecretExpired and SecretNewVersionCreated to the key_vault_events function.
// Deployed after the code is published (infra/events.bicep): the function endpoint must exist before
// Event Grid accepts a subscription to it. A vault has at most one system topic: if the vault already has
// one, point systemTopicName at it.
param keyVaultName string
param functionAppName string
param storageAccountName string
param systemTopicName string

@description('Blob container of the storage account that keeps the events Event Grid could not deliver.')
param deadLetterContainerName string = 'keyvault-events-deadletter'

@description('The Event Grid trigger function that receives the events (shared/entrypoints/expiry.py).')
param functionName string = 'key_vault_events'

var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deadLetterContainerName
  properties: { publicAccess: 'None' }
}

// The system topic's own identity writes dead letters: the account allows no shared keys.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: vault.location // a system topic lives in its source's region
  identity: { type: 'SystemAssigned' }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, systemTopic.id, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource toFunction 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'secret-lifecycle'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        // By id rather than an `existing` site: checkov's FunctionAppsAccessibleOverHttps check crashes on an
        // `existing` site (it has no properties).
        resourceId: resourceId('Microsoft.Web/sites/functions', functionAppName, functionName)
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
        'Microsoft.KeyVault.SecretNewVersionCreated'
      ]
    }
    // The function raises only when a dependency fails (a malformed event is dropped), so retries are
    // worth it: 30 attempts over at most 24 hours, then the dead-letter container.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: account.id
          blobContainerName: deadLetters.name
        }
      }
    }
  }
  dependsOn: [ deadLetterWriter ]
}

output systemTopicName string = systemTopic.name
output deadLetterContainerName string = deadLetters.name
