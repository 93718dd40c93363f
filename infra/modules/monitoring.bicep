param name string
param location string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    // Entra ID only: the app sends telemetry with its managed identity (Monitoring Metrics Publisher).
    DisableLocalAuth: true
  }
}

output appInsightsConnectionString string = insights.properties.ConnectionString
output appInsightsId string = insights.id
output workspaceId string = workspace.id
output appInsightsName string = insights.name
