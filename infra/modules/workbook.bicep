// The fleet workbook: one grid of every customer x sync (last result, failed runs, durations,
// warnings) over the Log Analytics workspace the customers' apps send to. Its query lives in
// infra/queries/fleet-grid.kql.

@description('Resource ID of the Log Analytics workspace the customers\' apps send to.')
param workspaceId string

@description('Azure region of the workbook.')
param location string

@description('Display name of the workbook.')
param displayName string = 'nexxt365 fleet'

@description('Tags for the resources.')
param tags object = {}

var content = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'intro'
      content: {
        json: '## nexxt365 fleet\nOne row per customer and sync over the last day. A red result or a warning has its fix in docs/operations.md; `nexxt365 status --tenant <customer>` shows the details.'
      }
    }
    {
      type: 3
      name: 'fleet-grid'
      content: {
        version: 'KqlItem/1.0'
        query: loadTextContent('../queries/fleet-grid.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.operationalinsights/workspaces'
        visualization: 'table'
        gridSettings: {
          formatters: [
            {
              columnMatch: 'LastResult'
              formatter: 18
              formatOptions: {
                thresholdsOptions: 'icons'
                thresholdsGrid: [
                  { operator: '==', thresholdValue: 'ok', representation: 'success', text: '{0}' }
                  { operator: '==', thresholdValue: 'failed', representation: 'warning', text: '{0}' }
                  { operator: 'Default', representation: 'failed', text: '{0}' }
                ]
              }
            }
          ]
        }
      }
    }
  ]
  fallbackResourceIds: [
    workspaceId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, workspaceId, 'nexxt365-fleet')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: workspaceId
    serializedData: string(content)
  }
}

output workbookId string = workbook.id
