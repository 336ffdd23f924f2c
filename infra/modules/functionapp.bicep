// Flex Consumption plan and the Linux Python function app.
// On Flex Consumption the runtime, scale and deployment storage live in
// functionAppConfig; FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION
// and WEBSITE_RUN_FROM_PACKAGE are not app settings there.

@description('Function app name (also the default host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Resource ID of the user-assigned identity the app runs as.')
param identityId string

@description('Blob container URL the platform deploys the app package from.')
param deploymentContainerUrl string

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances the app may scale out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance in MB.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('App settings (name to value); they replace every setting of the app.')
param appSettings object

@description('Tags for the plan and the app.')
param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Timer syncs resume from their cursors after a zone outage, and Flex Consumption zone redundancy is offered in a few regions only.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:The pipeline publishes the code through the app's public scm endpoint (Entra ID only; basic auth is off below).
  // checkov:skip=CKV_AZURE_17:Timer triggers only: the app serves no HTTP requests, so there are no client certificates to check.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero; a timer needs no standing instances.
  // checkov:skip=CKV_AZURE_213:Timer triggers only: there is no HTTP endpoint to probe.
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    // Key Vault references resolve with the user-assigned identity, not a system-assigned one.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      // All settings of the app, replaced on every deployment.
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Separate resources rather than nested children: the Bicep parser behind
// checkov and tests/infra keeps only the last nested child of a resource.
// Publishing uses Entra ID (OIDC in the pipeline); shared FTP and scm passwords stay off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
