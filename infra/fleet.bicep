// The partner's fleet monitoring, deployed once next to the partner's Log Analytics workspace:
// the fleet workbook and the alert rules. Every customer deployment (main.bicep) sends its
// telemetry there when given `logAnalyticsWorkspaceId`. See docs/operations.md.

targetScope = 'resourceGroup'

@description('Resource ID of the partner\'s Log Analytics workspace (the one every customer\'s app sends to).')
param workspaceId string

@description('E-mail address the alerts go to.')
param partnerEmail string

@description('Azure region (the workspace\'s region).')
param location string = resourceGroup().location

@description('Tags for the resources.')
param tags object = {}

var allTags = union(tags, {
  application: 'nexxt365'
})

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    workspaceId: workspaceId
    location: location
    tags: allTags
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    workspaceId: workspaceId
    partnerEmail: partnerEmail
    location: location
    tags: allTags
  }
}
