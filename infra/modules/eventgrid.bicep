// Consumer notifications: a custom topic taking CloudEvents; local auth off, so publishers need the
// "EventGrid Data Sender" role (the Function App's identity has it).
param name string
param location string
@description('true: reachable only through a private endpoint (modules/network.bicep).')
param privateNetworking bool = false
@description('Log Analytics workspace for the topic\'s publish and delivery failures.')
param workspaceId string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  // Consumers' subscriptions may deliver with this identity (to a queue or a hub of theirs, by role).
  identity: { type: 'SystemAssigned' }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    // checkov:skip=CKV_AZURE_193: disabled with privateNetworking=true; a first deploy keeps it (local auth is off: only Entra identities with EventGrid Data Sender publish)
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: topic
  properties: {
    workspaceId: workspaceId
    logs: [ { categoryGroup: 'allLogs', enabled: true } ]
    metrics: [ { category: 'AllMetrics', enabled: true } ]
  }
}

output name string = topic.name
output id string = topic.id
output endpoint string = topic.properties.endpoint
