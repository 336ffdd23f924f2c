// One storage account per app: Functions host storage (AzureWebJobsStorage),
// the Flex Consumption deployment container, the sync state tables and the
// fan-out queues.
// Only Entra ID (managed identity) access: shared keys are disabled.

@description('Storage account name: 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Redundancy. ZRS keeps the state when one zone fails; use Standard_LRS only where ZRS is not offered.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_ZRS'

@description('Blob container the Flex Consumption plan deploys the app package to.')
param deploymentContainerName string

@description('Tenants table for multi-customer mode; empty creates none.')
param tenantsTable string = ''

@description('Tags for the resources.')
param tags object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches its host storage over the public endpoint; access needs Entra ID (shared keys are off).
  // checkov:skip=CKV_AZURE_59:Public network access is needed for the same reason as CKV_AZURE_35.
  // checkov:skip=CKV_AZURE_206:Zone redundancy covers the loss of a datacenter; a regional outage only pauses the syncs, which resume from their state afterwards. Geo-replication is not worth its cost here.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The sync tables are created by the app; only the tenants table is made here,
// because the operator fills it before the app first runs.
resource tenants 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = if (!empty(tenantsTable)) {
  parent: tableService
  name: empty(tenantsTable) ? 'unused' : tenantsTable
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Queue fan-out (NEXXT365_FANOUT=queue): one queue per sync, which its timer fills with one
// message per customer and its queue trigger empties, and the -poison queue the host moves a
// message to after 5 failed dequeues. Made here so that the first dispatch finds them.
var fanoutQueues = [
  'nexxt365-users'
  'nexxt365-users-poison'
  'nexxt365-contacts'
  'nexxt365-contacts-poison'
  'nexxt365-calendar'
  'nexxt365-calendar-poison'
]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in fanoutQueues: {
  parent: queueService
  name: queue
}]

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
