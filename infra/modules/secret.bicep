// One Key Vault secret. A module of its own so that the caller can make it
// conditional (written only when a value is given) while the resource itself
// stays unconditional, which is what checkov can inspect.

@description('Name of the existing Key Vault.')
param vaultName string

@description('Secret name.')
param name string

@description('Secret value.')
@secure()
param value string

@description('Expiry as Unix time (seconds); 0 when the secret has none.')
param expiresEpoch int = 0

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41:exp is set when the expiry is known (the Graph client secret); ClearVox API keys have none, and checkov cannot evaluate the condition.
  parent: vault
  name: name
  properties: {
    value: value
    contentType: 'text/plain'
    attributes: expiresEpoch > 0 ? {
      enabled: true
      exp: expiresEpoch
    } : {
      enabled: true
    }
  }
}
