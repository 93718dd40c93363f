// The Function App on the Flex Consumption plan, Python 3.11, system-assigned identity. App settings use
// the identity-based connection forms, so no secret is stored in configuration.
param name string
param location string
param storageAccountName string
param deploymentContainerUrl string
param appInsightsConnectionString string
param keyVaultUrl string
param keyVaultUrls string = ''
param tableServiceUri string
param queueServiceUri string
param blobServiceUri string
param auditArchiveContainerName string
param auditRetentionDays int
param eventGridTopicEndpoint string
param authClientId string
param authTenantId string
@description('The subnet of the app\'s VNet integration (modules/network.bicep); empty: none.')
param subnetId string = ''
@description('Log Analytics workspace for the app\'s function logs and metrics.')
param workspaceId string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption (FC1) has no zone-redundancy setting of the App Service kind; its instances are placed by the platform
  name: 'plan-${name}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the HTTP API is for dispatch apps and Key Vault's Event Grid delivery, which reach it publicly; callers need an Entra token, a role and a function key
  // checkov:skip=CKV_AZURE_17: callers authenticate with Entra tokens (Easy Auth); Event Grid cannot present a client certificate
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design (always-ready instances are a cost choice); timers and events tolerate a cold start
  // checkov:skip=CKV_AZURE_213: App Service health check is not available on Flex Consumption; GET /api/health is for an availability test
  name: name
  location: location
  // azd deploys the service "api" of azure.yaml to the site with this tag.
  tags: { 'azd-service-name': 'api' }
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Outbound through the virtual network when private networking is on (its endpoints resolve there).
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
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
      http20Enabled: true
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'KEY_VAULT_URL', value: keyVaultUrl }
        { name: 'KEY_VAULT_URLS', value: keyVaultUrls }
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
        { name: 'RISK_WINDOW_HOURS', value: '168' }
        { name: 'RISK_BASELINE_DAYS', value: '30' }
        { name: 'RISK_THRESHOLD', value: '10' }
        { name: 'RISK_WEIGHTS', value: 'denied=1,rule_refusal=3,new_ip=2,new_user_agent=1,off_hours_decision=2,break_glass=5,request_rejected=2,request_expired=1,out_of_band_change=3' }
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
// checkov applies its checks of a site to this child (the authentication settings), which has none of those
// properties; the site itself is checked above. (pycep, checkov's parser, takes at most 9 comment lines in
// a row inside a resource.)
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  // checkov:skip=CKV_AZURE_13: this resource is the App Service Authentication itself
  // checkov:skip=CKV_AZURE_63: a site check: HTTP logs are not part of the authentication settings
  // checkov:skip=CKV_AZURE_65: a site check: detailed error messages are not part of the authentication settings
  // checkov:skip=CKV_AZURE_66: a site check: failed request tracing is not part of the authentication settings
  // checkov:skip=CKV_AZURE_80: a site check about .NET Framework; the app is Python
  // checkov:skip=CKV_AZURE_88: a site check about Azure Files; the app mounts no share
  // checkov:skip=CKV_AZURE_222: a site check, skipped on the site above with its reason
  // checkov:skip=CKV_AZURE_70: a site check, HTTPS only, which the site sets; the check crashes on this child
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

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [ { category: 'FunctionAppLogs', enabled: true } ]
    metrics: [ { category: 'AllMetrics', enabled: true } ]
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
