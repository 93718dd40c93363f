// The Function App on the Flex Consumption plan, Python 3.11, system-assigned identity. App settings use
// the identity-based connection forms, so no secret is stored in configuration.
param name string
param location string
param storageAccountName string
param deploymentContainerUrl string
param appInsightsConnectionString string
param keyVaultUrl string
param tableServiceUri string
param queueServiceUri string
param blobServiceUri string
param auditArchiveContainerName string
param auditRetentionDays int
param eventGridTopicEndpoint string
param authClientId string
param authTenantId string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'KEY_VAULT_URL', value: keyVaultUrl }
        { name: 'SECRETS_STORAGE__tableServiceUri', value: tableServiceUri }
        { name: 'SECRETS_STORAGE__queueServiceUri', value: queueServiceUri }
        // The audit archive's container, on the same account (SECRETS_STORAGE).
        { name: 'SECRETS_STORAGE__blobServiceUri', value: blobServiceUri }
        { name: 'AUDIT_ARCHIVE_CONTAINER', value: auditArchiveContainerName }
        // Audit records older than this many days are exported to the archive, then removed from the
        // table. 0: every record stays in the table (the export is opt-in).
        { name: 'AUDIT_RETENTION_DAYS', value: string(auditRetentionDays) }
        { name: 'EVENT_GRID_TOPIC_ENDPOINT', value: eventGridTopicEndpoint }
        // The rotation_sweep timer's schedule (a %...% binding expression): hourly, on the hour.
        { name: 'ROTATION_SWEEP_SCHEDULE', value: '0 0 * * * *' }
        // The expiry_check timer's schedule: daily at 06:00 UTC.
        { name: 'EXPIRY_CHECK_SCHEDULE', value: '0 0 6 * * *' }
        // true: the expiry check reports every enabled secret without an expiry date as a policy violation.
        { name: 'EXPIRY_REQUIRE_EXP', value: 'false' }
        // The rest are the code's defaults, set here so an operator tunes them in one place
        // (docs/settings.md says what each means; tests/unit/test_infra.py keeps this list whole).
        { name: 'AUDIT_ANCHOR_SECRET', value: 'audit-digest-anchor' }
        { name: 'AUDIT_SCAN_WINDOW_MINUTES', value: '15' }
        { name: 'AUDIT_SCAN_DENIED_PER_ACTOR', value: '5' }
        { name: 'AUDIT_SCAN_DENIED_PER_IP', value: '10' }
        { name: 'AUDIT_SCAN_ROTATION_FAILURES', value: '3' }
        { name: 'AUDIT_SCAN_REVOCATION_REQUESTS', value: '3' }
        { name: 'AUDIT_WORKING_HOURS', value: '07:00-19:00' }
        { name: 'AUDIT_WORKING_DAYS', value: 'Mon-Fri' }
        { name: 'AUDIT_TIMEZONE', value: 'UTC' }
        { name: 'REVOCATION_TTL_HOURS', value: '24' }
        { name: 'REVOCATION_APPROVALS', value: 'low=2,medium=2,high=1,critical=1' }
        { name: 'ROTATION_STALL_MINUTES', value: '120' }
      ]
    }
  }
}

// App Service Authentication (Easy Auth): the platform validates the caller's token and vouches for
// X-MS-CLIENT-PRINCIPAL. Anonymous requests pass through so /api/health works; every protected
// endpoint refuses a request without a verified principal itself.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: 'https://sts.windows.net/${authTenantId}/v2.0'
        }
        validation: {
          // v1 tokens carry the App ID URI, v2 tokens the bare client id.
          allowedAudiences: [ 'api://${authClientId}', authClientId ]
        }
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
