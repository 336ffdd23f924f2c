// Log Analytics workspace and workspace-based Application Insights.
// With `existingWorkspaceId` the app sends to the partner's one workspace (shared by every
// customer, where the fleet workbook and alerts of fleet.bicep look); otherwise it gets its own.
// Local (instrumentation key) authentication is off: the app sends telemetry
// with its managed identity (Monitoring Metrics Publisher, see roles.bicep).

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Azure region.')
param location string

@description('Days the workspace keeps logs.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Tags for the resources.')
param tags object = {}

@description('Resource ID of an existing Log Analytics workspace (the partner\'s, shared by all customers). Empty creates one for this customer.')
param existingWorkspaceId string = ''

var ownWorkspace = empty(existingWorkspaceId)

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (ownWorkspace) {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: ownWorkspace ? workspace.id : existingWorkspaceId
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
output workspaceId string = ownWorkspace ? workspace.id : existingWorkspaceId
output connectionString string = appInsights.properties.ConnectionString
