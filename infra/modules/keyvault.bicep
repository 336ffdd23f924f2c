// Key Vault for the Graph client secret and the ClearVox API key.
// RBAC authorisation (no access policies), soft delete and purge protection.
// A secret is only written when its value is given: an empty parameter leaves
// whatever the runbook stored there untouched on every later deployment.

@description('Key Vault name: 3-24 letters, digits and hyphens.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Name of the secret holding the Graph client secret.')
param clientSecretName string

@description('Name of the secret holding the ClearVox API key.')
param clearvoxApiKeyName string

@description('Graph client secret; empty keeps the stored one.')
@secure()
param clientSecret string = ''

@description('ClearVox API key; empty keeps the stored one.')
@secure()
param clearvoxApiKey string = ''

@description('Expiry of the client secret as a Unix time (seconds); 0 when unknown.')
param clientSecretExpiresEpoch int = 0

@description('Tags for the resources.')
param tags object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:Without VNet integration the app's Key Vault references and the pipeline's smoke test reach the vault over its public endpoint; every call needs an Entra ID token and an RBAC role on this vault.
  // checkov:skip=CKV_AZURE_189:Public network access is needed for the same reason as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Written only when a value is given; see the note at the top.
module clientSecretValue 'secret.bicep' = if (!empty(clientSecret)) {
  name: 'secret-${clientSecretName}'
  params: {
    vaultName: vault.name
    name: clientSecretName
    value: clientSecret
    expiresEpoch: clientSecretExpiresEpoch
  }
}

module clearvoxApiKeyValue 'secret.bicep' = if (!empty(clearvoxApiKey)) {
  name: 'secret-${clearvoxApiKeyName}'
  params: {
    vaultName: vault.name
    name: clearvoxApiKeyName
    value: clearvoxApiKey
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
// Version-less secret URIs: the app picks up a rotated secret without a redeployment.
output clientSecretUri string = '${vault.properties.vaultUri}secrets/${clientSecretName}/'
output clearvoxApiKeyUri string = '${vault.properties.vaultUri}secrets/${clearvoxApiKeyName}/'
