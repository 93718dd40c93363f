// Consumer notifications: a custom topic taking CloudEvents; local auth off, so publishers need the
// "EventGrid Data Sender" role (the Function App's identity has it).
param name string
param location string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
