// nexxt365 for one customer, in one resource group: a Python function app on
// Flex Consumption running as a user-assigned identity, its storage account,
// a Key Vault for the two secrets, Application Insights, and the role
// assignments that tie them together. Parameter files: infra/customers/.
targetScope = 'resourceGroup'

metadata description = 'nexxt365: links a Microsoft 365 tenant to a ClearVox Nexxt PBX (one customer).'

// ---------------------------------------------------------------- customer

@description('Short customer name in resource names: 2-12 lowercase letters, digits or hyphens.')
@minLength(2)
@maxLength(12)
param customer string

@description('Azure region; Flex Consumption must be offered there.')
param location string = resourceGroup().location

@description('Extra tags for every resource.')
param tags object = {}

// ------------------------------------------------------- Microsoft 365 side

@description('Microsoft 365 tenant: ID, domain or token endpoint URL (NEXXT365_TENANT).')
param tenant string

@description('Application (client) ID of the app registration (NEXXT365_CLIENT_ID).')
param clientId string

@description('Client secret of the app registration. Leave empty to keep the value stored in Key Vault (set it with the runbook).')
@secure()
param clientSecret string = ''

@description('Sign in to Microsoft Graph without any secret: the app registration trusts this app\'s managed identity through a federated identity credential (infra/entra-app.bicep, managedIdentityPrincipalId). No Key Vault secret for Graph is written or referenced; clientSecret and clientSecretExpires are ignored.')
param secretless bool = false

@description('Expiry date of the client secret, YYYY-MM-DD; doctor warns before it (NEXXT365_CLIENT_SECRET_EXPIRES).')
param clientSecretExpires string = ''

@description('Entra ID login host; change only for national clouds.')
param authorityHost string = 'https://login.microsoftonline.com'

@description('Microsoft Graph root; change only for national clouds.')
param graphUrl string = 'https://graph.microsoft.com'

// ------------------------------------------------------------ ClearVox side

@description('ClearVox Nexxt base URL, e.g. https://pbx.example.nl.')
param clearvoxUrl string

@description('ClearVox company ID (the number in /accounts/edit/<company-ID>).')
param clearvoxAccount string

@description('ClearVox API key. Leave empty to keep the value stored in Key Vault (set it with the runbook).')
@secure()
param clearvoxApiKey string = ''

// ------------------------------------------------------ multi-customer mode

@description('Tenants table name: when set, the app serves every row of that table instead of the settings above.')
param tenantsTable string = ''

@description('How a timer runs the customers: inline (itself), queue (one queue message per customer, run by queue-triggered functions that scale out). Empty: inline with one customer, queue with a tenants table.')
@allowed([
  ''
  'inline'
  'queue'
])
param fanout string = ''

// ---------------------------------------------------------------- schedules

@description('NCRONTAB schedule of the users sync.')
param usersSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the contacts sync.')
param contactsSchedule string = '0 */30 * * * *'

@description('NCRONTAB schedule of the calendar status sync.')
param calendarSchedule string = '0 * * * * *'

// ------------------------------------------------------------ sync options

@description('Hours between full (non-delta) user rounds.')
@minValue(1)
param fullSyncHours int = 24

@description('Link an existing ClearVox user with the same email automatically instead of reporting it.')
param autoLink bool = false

@description('What to do with a ClearVox user whose Entra user is removed.')
@allowed([
  'report'
  'deactivate'
])
param onRemoved string = 'report'

@description('Most ClearVox users one run may deactivate (a guard against mass removal).')
@minValue(0)
param maxDeactivations int = 10

@description('Object ID of the Entra group whose members are synced; empty syncs every user.')
param usersGroup string = ''

@description('Sync guest users too.')
param includeGuests bool = false

@description('Sync disabled users too.')
param includeDisabled bool = false

@description('Parallel requests to ClearVox.')
@minValue(1)
param clearvoxConcurrency int = 16

@description('Country for phone numbers without a country code (ISO 3166 two letters).')
param defaultRegion string = 'NL'

@description('Shared mailbox addresses, comma-separated, whose contacts become the ClearVox company phone book; empty: none.')
param companyContacts string = ''

@description('Let the calendar status also follow Teams presence (a call or a presentation makes the user Bezig or Niet storen within 30 s); needs Presence.Read.All (entra-app.bicep teamsPresence=true).')
param teamsPresence bool = false

@description('Overrides of the Teams presence to ClearVox status map, e.g. InACall=busy,Presenting=dnd,Away=none; empty keeps the defaults.')
param presenceMap string = ''

@description('Overrides of the show-as to ClearVox status map, e.g. tentative=available,oof=away; empty keeps the defaults.')
param statusMap string = ''

@description('Keep a status the user changed by hand during an event after the event ends, instead of restoring Beschikbaar.')
param respectManual bool = false

// ------------------------------------------------------------- operations

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_ZRS'

@description('Most function instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Object ID of the deployment pipeline\'s identity, allowed to read the secrets and state for the smoke test. Empty grants nothing.')
param deployerPrincipalId string = ''

@description('Type of that identity: ServicePrincipal for the pipeline, User when deploying with azd.')
@allowed([
  'ServicePrincipal'
  'User'
])
param deployerPrincipalType string = 'ServicePrincipal'

@description('Object ID of the operators\' group allowed to set and rotate the secrets. Empty grants nothing.')
param secretsOfficerPrincipalId string = ''

@description('Resource ID of the partner\'s Log Analytics workspace that every customer\'s app sends to (see infra/fleet.bicep). Empty gives this customer its own workspace.')
param logAnalyticsWorkspaceId string = ''

@description('Key Vault secret name of the Graph client secret.')
param clientSecretName string = 'graph-client-secret'

@description('Key Vault secret name of the ClearVox API key.')
param clearvoxApiKeyName string = 'clearvox-api-key'

// ------------------------------------------------------------------ names

var baseName = toLower(customer)
// Globally unique names (storage, vault, app) get a stable suffix per resource group.
var suffix = take(uniqueString(subscription().id, resourceGroup().id, baseName), 8)
var names = {
  identity: 'id-nexxt365-${baseName}'
  workspace: 'log-nexxt365-${baseName}'
  appInsights: 'appi-nexxt365-${baseName}'
  storage: take('st${replace(baseName, '-', '')}${suffix}', 24)
  keyVault: take('kv-${baseName}-${suffix}', 24)
  plan: 'plan-nexxt365-${baseName}'
  functionApp: 'func-nexxt365-${baseName}-${suffix}'
  deploymentContainer: 'app-package'
}
var allTags = union(tags, {
  application: 'nexxt365'
  customer: baseName
})
// Key Vault wants the expiry as Unix time; 1970-01-01 (0) means unknown.
var clientSecretExpiresEpoch = dateTimeToEpoch(empty(clientSecretExpires) ? '1970-01-01T00:00:00Z' : '${clientSecretExpires}T00:00:00Z')

// ---------------------------------------------------------------- modules

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: names.identity
    location: location
    tags: allTags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    location: location
    retentionInDays: logRetentionInDays
    existingWorkspaceId: logAnalyticsWorkspaceId
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    skuName: storageSku
    deploymentContainerName: names.deploymentContainer
    tenantsTable: tenantsTable
    tags: allTags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: names.keyVault
    location: location
    clientSecretName: clientSecretName
    clearvoxApiKeyName: clearvoxApiKeyName
    clientSecret: secretless ? '' : clientSecret
    clearvoxApiKey: clearvoxApiKey
    clientSecretExpiresEpoch: clientSecretExpiresEpoch
    tags: allTags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    appPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
    secretsOfficerPrincipalId: secretsOfficerPrincipalId
  }
}

// Every setting the code reads (tests/infra checks this against shared/).
var appSettings = {
  // Functions host storage through the identity; shared keys are disabled.
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  // The queue triggers (connection AzureWebJobsStorage) and the dispatcher use this endpoint (any cloud).
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // The app has only this user-assigned identity: DefaultAzureCredential needs its client ID.
  AZURE_CLIENT_ID: identity.outputs.clientId
  NEXXT365_MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
  NEXXT365_TENANT: tenant
  NEXXT365_CLIENT_ID: clientId
  // Secretless: the managed identity above is the app registration's credential (its token is the client assertion).
  NEXXT365_CLIENT_ASSERTION: secretless ? 'managed-identity' : ''
  NEXXT365_CLIENT_SECRET_EXPIRES: secretless ? '' : clientSecretExpires
  NEXXT365_AUTHORITY_HOST: authorityHost
  NEXXT365_GRAPH_URL: graphUrl
  NEXXT365_CLEARVOX_URL: clearvoxUrl
  NEXXT365_CLEARVOX_ACCOUNT: clearvoxAccount
  NEXXT365_CLEARVOX_API_KEY: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.clearvoxApiKeyUri})'
  NEXXT365_STATE: storage.outputs.tableEndpoint
  NEXXT365_TENANTS_TABLE: tenantsTable
  NEXXT365_FANOUT: fanout
  NEXXT365_KEY_VAULT_URL: keyVault.outputs.uri
  NEXXT365_USERS_SCHEDULE: usersSchedule
  NEXXT365_CONTACTS_SCHEDULE: contactsSchedule
  NEXXT365_CALENDAR_SCHEDULE: calendarSchedule
  NEXXT365_FULL_SYNC_HOURS: string(fullSyncHours)
  NEXXT365_AUTO_LINK: autoLink ? 'true' : 'false'
  NEXXT365_ON_REMOVED: onRemoved
  NEXXT365_MAX_DEACTIVATIONS: string(maxDeactivations)
  NEXXT365_USERS_GROUP: usersGroup
  NEXXT365_INCLUDE_GUESTS: includeGuests ? 'true' : 'false'
  NEXXT365_INCLUDE_DISABLED: includeDisabled ? 'true' : 'false'
  NEXXT365_CLEARVOX_CONCURRENCY: string(clearvoxConcurrency)
  NEXXT365_DEFAULT_REGION: defaultRegion
  NEXXT365_TEAMS_PRESENCE: teamsPresence ? 'true' : 'false'
  NEXXT365_PRESENCE_MAP: presenceMap
  NEXXT365_STATUS_MAP: statusMap
  NEXXT365_RESPECT_MANUAL: respectManual ? 'true' : 'false'
  NEXXT365_COMPANY_CONTACTS: companyContacts
}

// The client secret is a setting only when the app signs in with one: secretless, there is none at all.
var clientSecretSetting = secretless ? {} : {
  NEXXT365_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.clientSecretUri})'
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    identityId: identity.outputs.id
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    maximumInstanceCount: maximumInstanceCount
    appSettings: union(appSettings, clientSecretSetting)
    // azd finds the app to deploy to by this tag (azure.yaml service "api").
    tags: union(allTags, {
      'azd-service-name': 'api'
    })
  }
  // The host must be able to reach its storage and Key Vault when it first starts.
  dependsOn: [
    roles
  ]
}

// ---------------------------------------------------------------- outputs
// Named after the settings they feed, so the pipeline (and azd) can run
// `nexxt365 doctor` with the deployed configuration. Secrets are not outputs:
// the pipeline reads them from Key Vault by the names below.

output AZURE_FUNCTIONAPP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output GRAPH_CLIENT_SECRET_NAME string = secretless ? '' : clientSecretName
output CLEARVOX_API_KEY_SECRET_NAME string = clearvoxApiKeyName
output NEXXT365_MANAGED_IDENTITY_CLIENT_ID string = appSettings.NEXXT365_MANAGED_IDENTITY_CLIENT_ID
output NEXXT365_TENANT string = appSettings.NEXXT365_TENANT
output NEXXT365_CLIENT_ID string = appSettings.NEXXT365_CLIENT_ID
output NEXXT365_CLIENT_ASSERTION string = appSettings.NEXXT365_CLIENT_ASSERTION
output NEXXT365_CLIENT_SECRET_EXPIRES string = appSettings.NEXXT365_CLIENT_SECRET_EXPIRES
output NEXXT365_AUTHORITY_HOST string = appSettings.NEXXT365_AUTHORITY_HOST
output NEXXT365_GRAPH_URL string = appSettings.NEXXT365_GRAPH_URL
output NEXXT365_CLEARVOX_URL string = appSettings.NEXXT365_CLEARVOX_URL
output NEXXT365_CLEARVOX_ACCOUNT string = appSettings.NEXXT365_CLEARVOX_ACCOUNT
output NEXXT365_STATE string = appSettings.NEXXT365_STATE
output NEXXT365_TENANTS_TABLE string = appSettings.NEXXT365_TENANTS_TABLE
output NEXXT365_FANOUT string = appSettings.NEXXT365_FANOUT
output NEXXT365_KEY_VAULT_URL string = appSettings.NEXXT365_KEY_VAULT_URL
output NEXXT365_USERS_SCHEDULE string = appSettings.NEXXT365_USERS_SCHEDULE
output NEXXT365_CONTACTS_SCHEDULE string = appSettings.NEXXT365_CONTACTS_SCHEDULE
output NEXXT365_CALENDAR_SCHEDULE string = appSettings.NEXXT365_CALENDAR_SCHEDULE
output NEXXT365_FULL_SYNC_HOURS string = appSettings.NEXXT365_FULL_SYNC_HOURS
output NEXXT365_AUTO_LINK string = appSettings.NEXXT365_AUTO_LINK
output NEXXT365_ON_REMOVED string = appSettings.NEXXT365_ON_REMOVED
output NEXXT365_MAX_DEACTIVATIONS string = appSettings.NEXXT365_MAX_DEACTIVATIONS
output NEXXT365_USERS_GROUP string = appSettings.NEXXT365_USERS_GROUP
output NEXXT365_INCLUDE_GUESTS string = appSettings.NEXXT365_INCLUDE_GUESTS
output NEXXT365_INCLUDE_DISABLED string = appSettings.NEXXT365_INCLUDE_DISABLED
output NEXXT365_CLEARVOX_CONCURRENCY string = appSettings.NEXXT365_CLEARVOX_CONCURRENCY
output NEXXT365_DEFAULT_REGION string = appSettings.NEXXT365_DEFAULT_REGION
output NEXXT365_TEAMS_PRESENCE string = appSettings.NEXXT365_TEAMS_PRESENCE
output NEXXT365_PRESENCE_MAP string = appSettings.NEXXT365_PRESENCE_MAP
output NEXXT365_STATUS_MAP string = appSettings.NEXXT365_STATUS_MAP
output NEXXT365_RESPECT_MANUAL string = appSettings.NEXXT365_RESPECT_MANUAL
output NEXXT365_COMPANY_CONTACTS string = appSettings.NEXXT365_COMPANY_CONTACTS
